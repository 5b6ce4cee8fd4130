from tests.control_api.conftest import orchestrator  # noqa: F401 - the real orchestrator fixture
