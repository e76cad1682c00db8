"""Drive BGOptimizer's dialog inside a real Siril, off-screen (run by tests/test_siril_real.py).

Siril runs this file with ``pyscript siril_gui_driver.py <path of BGOptimizer.py>``, in its
own venv and with the real sirilpy, on the image the Siril script loaded. It installs what
the dialog needs the way the script does, builds the PyQt6 window off-screen, presses
Preview, then Apply, waits for the worker thread, and logs one line
``GUI-DRIVER {json}`` for the test to read. Siril's ``is_cli()`` is True for a script
run, so it is answered False here: the dialog then takes the path of the Scripts menu
(undo state saved under the image lock). Headless, Siril accepts that call and keeps no
undo history.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import traceback


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import sirilpy

    spec = importlib.util.spec_from_file_location("BGOptimizer", sys.argv[1])
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    siril = sirilpy.SirilInterface()
    siril.connect()
    report = {"undo": [], "errors": [], "pixels_set": 0}
    try:
        script.prepare_engine(siril, gui=True)
        siril.is_cli = lambda: False
        real_undo, real_set = siril.undo_save_state, siril.set_image_pixeldata

        def undo(text):
            report["undo"].append(text)
            return real_undo(text)

        def set_pixels(data):
            result = real_set(data)      # raises unless called under image_lock()
            report["pixels_set"] += 1
            return result

        siril.undo_save_state, siril.set_image_pixeldata = undo, set_pixels
        siril.error_messagebox = lambda text, modal=False: report["errors"].append(text)

        from PyQt6.QtWidgets import QApplication

        app = QApplication.instance() or QApplication([])
        window = script.make_window(siril)
        window.widgets["epochs"].setValue(150)
        window.widgets["seed"].setValue(1)
        window.show_preview()
        pixmap = window.preview.pixmap()
        report["preview_pixels"] = 0 if pixmap is None else pixmap.width() * pixmap.height()
        window.apply()
        deadline = time.time() + 300
        while window.result is None and not report["errors"] and time.time() < deadline:
            app.processEvents()
            time.sleep(0.05)
        report["result"] = window.result is not None
        window.close()
    except Exception:  # noqa: BLE001 - the test reads the report
        report["errors"].append(traceback.format_exc(limit=3).replace("\n", " | "))
    siril.log("GUI-DRIVER " + json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
