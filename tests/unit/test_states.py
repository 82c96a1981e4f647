import pytest

from opensage.api.spec import service_model
from opensage.states import TABLES, IllegalTransition, check


def test_transition_tables_every_status_is_a_spec_enum_value():
    model = service_model("sagemaker")
    for kind, (enum_shape, table) in TABLES.items():
        allowed = set(model.shape_for(enum_shape).enum)
        statuses = set(table) | {s for targets in table.values() for s in targets}
        assert statuses <= allowed, (kind, statuses - allowed)


def test_check_terminal_status_cannot_restart():
    with pytest.raises(IllegalTransition):
        check("training-job", "Completed", "InProgress")
    check("training-job", "InProgress", "Stopping")
