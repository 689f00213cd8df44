from newsindex.cli import main

main()
