import sys
from pathlib import Path

import torch

# tiny_pipes lives beside the tests; tests/runtime has no __init__ so that it cannot shadow `runtime`
sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(1)
