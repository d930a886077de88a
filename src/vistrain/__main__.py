from vistrain.cli import main

main()
