from stackmatrix.cli.main import main

raise SystemExit(main())
