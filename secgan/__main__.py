from secgan.cli import main

raise SystemExit(main())
