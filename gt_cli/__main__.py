from gt_cli.app import main

main()
