from pruneofa.cli import main

raise SystemExit(main())
