"""`python -m sds3d.app [--host H] [--port P] ...`: the same as `sds3d app`."""

from .server import main

raise SystemExit(main())
