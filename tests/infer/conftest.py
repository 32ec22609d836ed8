from tests.train.conftest import one_thread  # noqa: F401  (autouse: tiny models run fastest on one thread)
