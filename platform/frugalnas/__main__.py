from frugalnas.cli import main

main()
