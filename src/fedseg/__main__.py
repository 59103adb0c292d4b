from fedseg.cli.main import main

main()
