// policyc for VS Code: starts `policyc lsp` (stdio) for .policy files.
const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const config = vscode.workspace.getConfiguration("policyc");
  const [command, ...args] = config.get("server.command", ["policyc", "lsp"]);
  const server = { command, args, transport: TransportKind.stdio };
  client = new LanguageClient("policyc", "policyc", { run: server, debug: server }, {
    documentSelector: [{ scheme: "file", language: "policy" }, { scheme: "untitled", language: "policy" }],
    initializationOptions: { explainSteps: config.get("explain.steps", 50) },
    synchronize: { configurationSection: "policyc" },
  });
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
