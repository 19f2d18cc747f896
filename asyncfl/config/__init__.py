"""Scenario files: schema (:mod:`.schema`) and loading with overrides (:mod:`.loader`)."""

from asyncfl.config.loader import apply_overrides, dump_scenario, load_scenario, validate
from asyncfl.config.schema import Scenario

__all__ = ["Scenario", "apply_overrides", "dump_scenario", "load_scenario", "validate"]
