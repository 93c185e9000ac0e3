"""``python -m atman_onnx.cli``: the command line, as the ``atman-onnx`` script runs it."""

import sys

from atman_onnx.cli import main

sys.exit(main())
