from riverfs.cli.main import main

main()
