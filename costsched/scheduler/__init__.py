"""The live scheduler's pure core: durable job state, the controller, alerts.

Nothing here imports ``ray``: the Ray layer implements the collaborators in
:mod:`costsched.scheduler.interfaces` and drives
:class:`~costsched.scheduler.controller.SchedulerController` from an actor.
"""
