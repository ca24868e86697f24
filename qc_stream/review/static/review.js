// Keyboard shortcuts: a key presses the button or link that carries it in data-key.
// Enter or "s" on the queue opens the newest frame. Keys typed into a text field are left alone.
"use strict";
document.addEventListener("keydown", function (event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  var target = event.target;
  if (target && (target.tagName === "INPUT" || target.tagName === "SELECT" || target.tagName === "TEXTAREA")) return;
  var key = event.key.toLowerCase();
  var first = document.getElementById("first-item");
  if (first && (key === "enter" || key === "s")) {
    event.preventDefault();
    first.click();
    return;
  }
  var element = document.querySelector('[data-key="' + CSS.escape(key) + '"]');
  if (element) {
    event.preventDefault();
    element.click();
  }
});
