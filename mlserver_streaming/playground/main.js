// The page's entry point: tabs, then each panel wires itself up.
import { initClassifierPanel } from "./classifier.js";
import { initTextPanel } from "./text.js";

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const other of document.querySelectorAll(".tab")) other.classList.remove("active");
    for (const panel of document.querySelectorAll(".panel")) panel.classList.remove("active");
    tab.classList.add("active");
    document.getElementById(tab.dataset.panel).classList.add("active");
  });
}

initTextPanel();
initClassifierPanel();
