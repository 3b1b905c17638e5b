"""Day-2 operations on a running pair, over SSH as the operator: switchover and rolling image
upgrades. `python -m prep_ha switchover|roll` and the stack's roll Command run them."""
