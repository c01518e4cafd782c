"""``python -m oci_executor.doctor [--json] [--backend NAME] [--image IMAGE] [--address URL]``."""

import sys

from oci_executor.doctor import main

sys.exit(main())
