from sds3d.app.owner_jobs import OwnerJobs


class Job:
    def __init__(self):
        self.stopped = False

    def stop(self):
        self.stopped = True


def test_a_new_job_stops_the_owners_previous_one_only():
    jobs, first, other, second = OwnerJobs(), Job(), Job(), Job()
    jobs.start("a", first)
    jobs.start("b", other)
    jobs.start("a", second)
    assert first.stopped and not other.stopped and not second.stopped
    jobs.finish("a", first)  # an old job ending does not forget the newer one
    assert jobs.stop("a") and second.stopped
    jobs.finish("a", second)
    assert not jobs.stop("a") and jobs.stop("b") and other.stopped
