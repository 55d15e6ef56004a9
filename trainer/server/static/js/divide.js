// The "Divide LR by 10" button: a confirmation with the current and the new LR and a
// reason, the operator token asked once per tab (sessionStorage), then the command
// followed from pending to applied at step N (or rejected, with the reason).
import * as fmt from "./format.js";

const TOKEN_KEY = "alexnet-operator-token";
const FACTOR = 10;
// The paper's reason for every division; pre-filled and selected, so that typing replaces it.
export const DEFAULT_REASON = "validation error stopped improving";
const $ = id => document.getElementById(id);

function newKey() {
  // One key per opened dialog: a double click or a retried request is still one command.
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), b => b.toString(16).padStart(2, "0")).join("");
}

export function initDivide(getRun) {
  const dialog = $("divide-dialog"), form = $("divide-form"), error = $("divide-error");
  let key = null, runAtOpen = null;

  $("divide-button").addEventListener("click", () => {
    runAtOpen = getRun();
    if (!runAtOpen) return;
    key = newKey();
    $("divide-current").textContent = fmt.lr(runAtOpen.lr);
    $("divide-new").textContent = runAtOpen.lr == null ? fmt.dash : fmt.lr(runAtOpen.lr / FACTOR);
    $("divide-run").textContent = `Run ${runAtOpen.name} (#${runAtOpen.id}), step ${fmt.int(runAtOpen.step)}`;
    $("token-row").hidden = Boolean(sessionStorage.getItem(TOKEN_KEY));
    error.textContent = "";
    const reason = $("divide-reason");
    if (!reason.value.trim()) reason.value = DEFAULT_REASON;  // a reason typed and cancelled stays
    dialog.showModal();
    reason.focus();
    reason.select();
  });
  $("divide-cancel").addEventListener("click", () => dialog.close());

  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const reason = $("divide-reason").value.trim();
    const token = sessionStorage.getItem(TOKEN_KEY) || $("divide-token").value.trim();
    if (!reason) { error.textContent = "Say why: the reason is kept with the command."; return; }
    if (!token) { $("token-row").hidden = false; error.textContent = "The operator token is needed."; return; }
    $("divide-confirm").disabled = true;
    try {
      const r = await fetch(`/api/runs/${runAtOpen.id}/lr/divide`, {
        method: "POST",
        headers: {"Content-Type": "application/json", "Authorization": `Bearer ${token}`, "Idempotency-Key": key},
        body: JSON.stringify({factor: FACTOR, reason}),
      });
      const body = await r.json().catch(() => ({}));
      if (r.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        $("token-row").hidden = false;
        error.textContent = "The token was refused. Enter it again.";
        return;
      }
      if (r.status === 202) {
        sessionStorage.setItem(TOKEN_KEY, token);
        $("divide-token").value = "";
        $("divide-reason").value = "";
        dialog.close();
        follow(body);
        return;
      }
      if (body.command) { sessionStorage.setItem(TOKEN_KEY, token); dialog.close(); show(body.command); return; }
      error.textContent = typeof body.detail === "string" ? body.detail : `refused (HTTP ${r.status})`;
    } catch (e) {
      error.textContent = `The server did not answer: ${e.message}. Confirm again: the same request is sent.`;
    } finally {
      $("divide-confirm").disabled = false;
    }
  });
}

function show(cmd) {
  const el = $("command-status");
  $("command-panel").hidden = false;
  el.dataset.state = cmd.state;
  el.dataset.commandId = cmd.id;
  const what = `Command #${cmd.id}: divide LR by ${cmd.factor}`;
  if (cmd.state === "pending") el.textContent = `${what}: pending, waiting for the trainer…`;
  else if (cmd.state === "applied") {
    el.dataset.step = cmd.applied_step;
    el.textContent = `${what}: applied at step ${cmd.applied_step}`;
  } else el.textContent = `${what}: rejected: ${cmd.detail}`;
}

// Poll the command until the trainer has applied or rejected it.
async function follow(cmd) {
  show(cmd);
  while (cmd.state === "pending") {
    await new Promise(res => setTimeout(res, 1000));
    try {
      const r = await fetch(`/api/commands/${cmd.id}`, {cache: "no-store"});
      if (r.ok) cmd = await r.json();
    } catch (e) { /* the server is restarting: keep asking */ }
    show(cmd);
  }
}
