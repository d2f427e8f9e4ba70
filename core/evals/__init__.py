"""Safety evaluation: queued jobs, evaluation runs and results, risk scores.

A served request's ``eval_enqueue`` stage hands a job (:mod:`.jobs`) to the
queue (:mod:`.queue`) after the response was released; a worker runs the
workspace's evaluators on it and stores the verdicts as results of live
evaluation runs with a combined risk score (:mod:`.runs`).  A queue that
cannot be reached defers the job to the database (:mod:`.deferred`).
``sluicegate evals rerun`` re-evaluates stored payloads as new runs
(:mod:`.rerun`); ``sluicegate evals compare`` diffs two runs (:mod:`.compare`).
"""
