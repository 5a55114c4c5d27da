"""Fitted goodput models (Pollux, OSDI '21): step time from measured steps, statistical
efficiency from the gradient noise scale. Pure: no ``ray``.

* :mod:`costsched.goodput.throughput`: the step-time model, its fit, a ThroughputModel;
* :mod:`costsched.goodput.noise`: the gradient noise scale estimator;
* :mod:`costsched.goodput.torch_grads`: its inputs from per-replica torch gradients;
* :mod:`costsched.goodput.profile`: measured points to and from the simulator's profiles.
"""
