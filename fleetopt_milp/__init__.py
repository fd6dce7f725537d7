"""fleetopt-milp."""
