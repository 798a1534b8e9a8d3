"""Train a testbed (or the digit classifier) on moving digits; see runtime/testbeds/train.py.

    python examples/train_testbed.py testbed --steps 6000          # Wan, synchronous
    python examples/train_testbed.py testbed-df --steps 6000       # SkyReels-V2, diffusion forcing
    python examples/train_testbed.py classifier                    # the scoring CNN
"""

import sys

from runtime.testbeds import classifier, train

if __name__ == "__main__":
    if sys.argv[1:2] == ["classifier"]:
        classifier.main(sys.argv[2:])
    else:
        train.main(sys.argv[1:])
