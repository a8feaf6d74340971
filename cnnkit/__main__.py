from cnnkit.cli import run

run()
