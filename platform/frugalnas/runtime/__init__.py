"""Adapters from the domain code to Ray (Data, Train, Tune). Only this package imports Ray."""
