"""``python -m facerig`` runs the command-line tool."""

from facerig.cli import main

raise SystemExit(main())
