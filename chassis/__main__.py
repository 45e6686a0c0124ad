from chassis.cli import main

main(prog_name="chassis")
