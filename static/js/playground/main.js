// The playground's pages (prompt and compare) over /ws/playground/: whichever this page is.

import { startCompare } from "./compare.js";
import { startPrompt } from "./prompt.js";

const playground = document.getElementById("playground");
if (playground) startPrompt(playground);
const compare = document.getElementById("compare");
if (compare) startCompare(compare);
