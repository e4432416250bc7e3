# Runs first after every reset. Kept empty on purpose: anything here runs before the node can
# count a crash-boot, so a mistake in it could never reach safe mode. main.py starts the node.
