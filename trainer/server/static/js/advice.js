// The plateau banner: "top-1 error flat for 3 epochs (best 41.2 % at epoch 37): divide the
// learning rate by 10?" with the division button beside it, when GET /api/runs/{id}/advice
// says the run's validation error has stopped improving (the rule of --lr-policy plateau,
// trainer/runstore/advice.py). It goes once a division is applied or the error improves.
// Text only (textContent): nothing from the store is parsed as HTML.
const $ = id => document.getElementById(id);

export function initAdvice() {
  // The banner's button is the page's division button: one dialog, one token, one command.
  $("advice-divide").addEventListener("click", () => $("divide-button").click());
}

export async function refreshAdvice(getJSON, run) {
  const a = await getJSON(`/api/runs/${run.id}/advice`);
  const box = $("advice");
  box.dataset.flat = String(a.flat_epochs);
  const rule = `rule: best top-1 error not beaten by more than ${100 * a.threshold} percentage points for ` +
               `${a.patience} validations (policy ${a.policy}` +
               `${a.policy === "plateau" ? "" : "; the plateau policy's defaults"}); ` +
               `flat now: ${a.flat_epochs}`;
  const show = a.due || Boolean(a.policy_acts && a.flat_epochs > 0);
  box.hidden = !show;
  if (!show) return;
  $("advice-text").textContent = a.due ? a.suggestion + (a.policy_acts ? ` (${a.policy_acts})` : "")
                                       : `${capital(a.policy_acts)}.`;
  box.title = rule;
  $("advice-divide").hidden = !a.due;
  $("advice-divide").disabled = run.status !== "running";
}

const capital = s => s.charAt(0).toUpperCase() + s.slice(1);
