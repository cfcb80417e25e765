"""Micropayment channels: signed states, the payer, payee and hub runtimes, billing."""
