from galvatron.cli import main

raise SystemExit(main())
