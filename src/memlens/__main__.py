try:
    # memlens.cli installs its signal handlers first thing; a Ctrl-C that comes before
    # (interpreter start-up) must not print an import traceback either
    from memlens.cli import main
except KeyboardInterrupt:
    raise SystemExit(130) from None

raise SystemExit(main())
