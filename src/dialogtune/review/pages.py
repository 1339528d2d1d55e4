"""The review page's HTML: server-rendered, a little inline CSS and vanilla JS, no build step.

The pair page is a plain form that works without JavaScript (radio buttons, checkboxes, a submit
button); the script only adds the keyboard shortcuts (1 / 2 / 3 choose, n submits) and keeps
"Next" disabled until a choice is made. Nothing on the page names a model: the summaries are
"A" (left) and "B" (right), and the form posts only the pair's random token and the choice.
Every text from a run is escaped (a summary may contain ``<script>``).
"""

from __future__ import annotations

from urllib.parse import quote

from dialogtune.report.render import esc
from dialogtune.review.store import FLAGS, Shown

_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:.8rem 1rem 2rem;line-height:1.45;color:#1b1f24;font-size:1rem}
header{display:flex;flex-wrap:wrap;gap:.2rem 1rem;align-items:baseline;justify-content:space-between;
border-bottom:1px solid #d0d7de;margin-bottom:.6rem;padding-bottom:.3rem}
header h1{font-size:1.15rem;margin:0}.muted{color:#57606a;font-size:.9rem}
h2{font-size:1rem;margin:.6rem 0 .3rem}
pre.dialogue{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f8fa;padding:.6rem .8rem;
border-radius:6px;max-height:45vh;overflow-y:auto;font:inherit;font-size:.95rem;margin:0}
.summaries{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:.8rem;margin-top:.8rem}
@media (max-width:640px){.summaries{grid-template-columns:minmax(0,1fr)}}
fieldset{border:1px solid #d0d7de;border-radius:8px;margin:0;padding:.4rem .8rem .6rem;min-width:0}
legend{font-weight:600;padding:0 .3rem}
.summary p{white-space:pre-wrap;overflow-wrap:anywhere;margin:.2rem 0 .5rem}
.flags label{display:block;font-size:.88rem;color:#57606a;padding:.15rem 0}
.verdict{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:.5rem;margin-top:.8rem;border:0;padding:0}
.verdict legend{grid-column:1/-1;margin-bottom:.3rem}
.verdict label{display:block;border:2px solid #d0d7de;border-radius:8px;padding:.7rem .4rem;text-align:center;
cursor:pointer;user-select:none}
.verdict label:has(input:checked){border-color:#0969da;background:#ddf4ff}
button{font:inherit;padding:.75rem 1.2rem;border-radius:8px;border:1px solid #1f6feb;background:#1f6feb;
color:#fff;cursor:pointer}button:disabled{opacity:.45;cursor:default}
#next{display:block;width:100%;margin-top:.8rem;font-size:1.05rem}
kbd{font:.8rem ui-monospace,monospace;border:1px solid #d0d7de;border-bottom-width:2px;border-radius:4px;
padding:0 .3rem;background:#f6f8fa;color:#1b1f24}
input[type=text],input[type=password]{font:inherit;padding:.55rem;width:100%;max-width:24rem;
border:1px solid #d0d7de;border-radius:6px;display:block;margin:.2rem 0 .8rem}
.error{background:#ffebe9;border:1px solid #ff8182;padding:.6rem .8rem;border-radius:6px}
"""

_SCRIPT = """
(function () {
  var form = document.getElementById("vote"), next = document.getElementById("next");
  if (!form) return;
  var keys = {"1": "left", "2": "right", "3": "tie"};
  function update() { next.disabled = !form.querySelector("input[name=choice]:checked"); }
  form.addEventListener("change", update);
  form.addEventListener("submit", function () { setTimeout(function () { next.disabled = true; }); });
  update();
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    if (keys[e.key]) {
      form.querySelector("input[name=choice][value=" + keys[e.key] + "]").checked = true;
      update();
      e.preventDefault();
    } else if (e.key === "n" || e.key === "N") {
      if (!next.disabled) form.requestSubmit(next);
      e.preventDefault();
    }
  });
})();
"""


def rate_url(rater: str) -> str:
    return "/rate?rater=" + quote(rater, safe="")


def _page(title: str, body: str, header: str = "") -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1>{header}</header>{body}<script>{_SCRIPT}</script></body></html>\n"
    )


def start_page(n_models: int, n_items: int, per_rater: int, needs_token: bool, error: str = "") -> str:
    token = (
        '<label for="token">Access token</label><input type="password" id="token" name="token" required>'
        if needs_token
        else ""
    )
    problem = f'<p class="error">{esc(error)}</p>' if error else ""
    body = (
        f"<p>You will see a dialogue and two summaries of it, written by {n_models} different models "
        f"({n_items} dialogues). Which model wrote which is hidden and the sides are shuffled. Pick the "
        "better summary, or a tie, and flag problems you notice. Up to "
        f"{per_rater} pairs; stop whenever you like and come back with the same name.</p>{problem}"
        '<form method="post" action="/start"><label for="name">Your name (no account needed)</label>'
        '<input type="text" id="name" name="name" required maxlength="40" autofocus autocomplete="nickname">'
        f'{token}<button type="submit">Start</button></form>'
    )
    return _page("Blind review", body)


def pair_page(shown: Shown) -> str:
    empty = '<p class="muted"><em>(empty summary)</em></p>'

    def summary(side: str, label: str, text: str) -> str:
        flags = "".join(
            f'<label><input type="checkbox" name="flag_{side}" value="{key}"> {esc(description)}</label>'
            for key, description in FLAGS.items()
        )
        return (
            f'<fieldset class="summary" id="summary-{side}"><legend>Summary {label}</legend>'
            f'<p class="text">{esc(text)}</p>{empty if not text.strip() else ""}<div class="flags">{flags}</div>'
            "</fieldset>"
        )

    choices = (("left", "1", "A is better"), ("right", "2", "B is better"), ("tie", "3", "Tie"))
    verdict = "".join(
        f'<label><input type="radio" name="choice" value="{value}" required> <kbd>{key}</kbd> {text}</label>'
        for value, key, text in choices
    )
    header = (
        f'<span id="progress" class="muted">pair {shown.done + 1} of {shown.total}</span>'
        f'<span class="muted">rater: {esc(shown.rater)}</span>'
    )
    body = (
        f'<main id="pair" data-dialogue-id="{esc(shown.dialogue_id)}">'
        f'<h2>Dialogue <span class="muted">{esc(shown.dialogue_id)}</span></h2>'
        f'<pre class="dialogue">{esc(shown.dialogue)}</pre>'
        '<form method="post" action="/vote" id="vote">'
        f'<input type="hidden" name="rater" value="{esc(shown.rater)}">'
        f'<input type="hidden" name="pair" value="{esc(shown.token)}">'
        f'<div class="summaries">{summary("left", "A", shown.left)}{summary("right", "B", shown.right)}</div>'
        f'<fieldset class="verdict"><legend>Which summary is better?</legend>{verdict}</fieldset>'
        '<button type="submit" id="next">Next <kbd>n</kbd></button></form></main>'
        '<p class="muted">Keys: <kbd>1</kbd> A better, <kbd>2</kbd> B better, <kbd>3</kbd> tie, '
        "<kbd>n</kbd> next. Flags are optional.</p>"
    )
    return _page("Blind review", body, header)


def done_page(rater: str, done: int, total: int) -> str:
    body = (
        f'<p id="done">Thank you, {esc(rater)}: you have judged {done} of the {total} pairs planned for you. '
        "Your votes are saved.</p>"
    )
    return _page("Blind review", body, f'<span id="progress" class="muted">{done} of {total}</span>')


def error_page(status: int, message: str, rater: str | None = None) -> str:
    back = (
        f'<a href="{esc(rate_url(rater))}">back to your next pair</a>'
        if rater
        else '<a href="/">start page</a>'
    )
    return _page("Blind review", f'<p class="error">{status}: {esc(message)}</p><p>{back}</p>')
