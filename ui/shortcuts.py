"""Keyboard shortcuts for reading (Review and Worklist pages). Streamlit has no key bindings,
so a tiny script in a 1 px high iframe maps a key to a click on the labelled control the page
already has; nothing happens while the reader types in a field."""

from __future__ import annotations

import streamlit as st

#: key -> what it does (shown in the help popover, in this order)
SHORTCUTS = {
    "n": "next study (Review: the next image of this tab; Worklist: 'Reviewed, next')",
    "p": "previous study (Review page)",
    "h": "heatmap on or off in the viewer",
    "a": "agree with the model on the first unanswered finding",
    "d": "disagree with the model on the first unanswered finding",
}

_SCRIPT = """
<script>
const doc = window.parent.document;
if (!doc.__cxrShortcuts) {
  doc.__cxrShortcuts = true;
  const button = (text) => {
    const found = Array.from(doc.querySelectorAll('button'))
      .find(b => b.innerText.includes(text) && !b.disabled);
    if (found) { found.click(); }
    return Boolean(found);
  };
  const toggle = (text) => {
    const found = Array.from(doc.querySelectorAll('input[type="checkbox"]'))
      .find(i => i.getAttribute('aria-label') === text
                 || (i.closest('label') && i.closest('label').innerText.trim() === text));
    if (found) { found.click(); }
    return Boolean(found);
  };
  const answer = (option) => {
    const open = Array.from(doc.querySelectorAll('[data-testid="stRadio"]'))
      .filter(g => g.innerText.includes('(model:') && !g.querySelector('input:checked'));
    const choices = open.length ? open[0].querySelectorAll('[role="radiogroup"] label') : [];
    if (choices[option]) { choices[option].click(); return true; }
    return false;
  };
  doc.addEventListener('keydown', (event) => {
    const target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey || (target && (target.isContentEditable
        || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName)))) { return; }
    const actions = {
      n: () => button('Next study') || button('Reviewed, next'),
      p: () => button('Previous study'),
      h: () => toggle('Heatmap'),
      a: () => answer(0),
      d: () => answer(1),
    };
    const action = actions[event.key];
    if (action && action()) { event.preventDefault(); }
  });
}
</script>
"""


def keyboard_shortcuts() -> None:
    """Install the key bindings once per browser tab and list them in a help popover."""
    # st.iframe (components.v1.html is deprecated): 1 px, the least it accepts ("content"
    # measures the script's empty page as 150 px)
    st.iframe(_SCRIPT, height=1, alt="keyboard shortcuts")
    with st.popover("⌨ Keyboard shortcuts"):
        st.markdown("\n".join(f"- **{key}**: {what}" for key, what in SHORTCUTS.items()))
        st.caption("Not while typing in a field.")
