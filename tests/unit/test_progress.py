"""Long training steps are never silent: the progress sink repeats the last step with its age."""
import time

from training_job.progress import Progress


def test_silent_stretch_gets_a_heartbeat_naming_the_step():
    said = []
    with Progress(said.append, every=0.05) as say:
        say("[final] fitting on all 500 rows")
        time.sleep(0.3)
        say("[publish] done")
        time.sleep(0.02)
    assert said[0] == "[final] fitting on all 500 rows"
    beats = [m for m in said[1:-1]]
    assert beats and all(m.startswith("[final] ... still working (") for m in beats), said
    assert said[-1] == "[publish] done"


def test_no_heartbeat_while_messages_keep_coming():
    said = []
    with Progress(said.append, every=0.2) as say:
        for i in range(5):
            say(f"[cv] fold {i}")
            time.sleep(0.02)
    assert said == [f"[cv] fold {i}" for i in range(5)]
