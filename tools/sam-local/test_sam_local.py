"""Unit tests of sam_local.py's handling of `sam local start-api` stopping: run by
`make test` (`python -m unittest discover -s tools/sam-local`)."""

import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import sam_local

# A stand-in for SAM: a Python process that either exits on Ctrl-C or, like SAM's shutdown
# when it hangs, ignores it.
EXITS = "import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    pass\n"
HANGS = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)\n"


class StopStartApiTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.log_path = Path(self.dir.name) / "start-api.log"
        self.stop_seconds, self.step = sam_local.START_API_STOP_SECONDS, sam_local.step
        sam_local.START_API_STOP_SECONDS = 2
        self.said = []
        sam_local.step = self.said.append

    def tearDown(self):
        sam_local.START_API_STOP_SECONDS, sam_local.step = self.stop_seconds, self.step
        self.dir.cleanup()

    def start(self, code):
        with open(self.log_path, "w") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", code],
                env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                preexec_fn=sam_local.takes_ctrl_c,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # Ctrl-C is only taken once the stand-in has set itself up.
        time.sleep(0.5)
        return process

    def test_when_sam_exits_on_ctrl_c_should_say_so(self):
        process = self.start(EXITS)
        self.assertTrue(sam_local.stop_start_api(process, self.log_path))
        self.assertEqual(process.returncode, 0)
        self.assertEqual(self.said, [])

    def test_when_sam_hangs_should_end_it_with_its_stacks_in_its_log(self):
        process = self.start(HANGS)
        self.assertFalse(sam_local.stop_start_api(process, self.log_path))
        self.assertIsNotNone(process.returncode, "the hung process is ended")
        self.assertTrue(self.said[0].startswith("WARNING: sam local start-api did not exit"), self.said)
        log = self.log_path.read_text()
        self.assertIn("Fatal Python error: Aborted", log)
        self.assertIn('File "<string>", line 3 in <module>', log, "the stack shows where it waited")


if __name__ == "__main__":
    unittest.main()
