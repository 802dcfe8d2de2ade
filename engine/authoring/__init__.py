"""Authoring: lint (fact-space solver, arithmetic), scenario tests and coverage, pack diff."""
