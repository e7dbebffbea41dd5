from eigenedit.training.recipe import main

main()
