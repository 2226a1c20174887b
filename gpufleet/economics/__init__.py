"""Fleet economics: demand, prices, a performance model and the optimizer.

* :mod:`.prices` reads ``prices.yaml``: owned servers as committed cost per
  GPU-hour, cloud prices per region, instance and capacity type, quotas.
* :mod:`.demand` reads ``stacks/demand.yaml``: serving traffic and SLOs per
  model and site group, GPU-hours per training queue.
* :mod:`.perf` gives sustainable output tokens/s per replica at an SLO, from a
  roofline over the catalogue or from measured ``vllm bench serve`` results
  (:mod:`.calibrate`).
* :mod:`.optimize` is the mixed-integer program (HiGHS) that proposes the
  cheapest fleet meeting the demand, owned GPUs first; :mod:`.costing` prices
  a fleet as described; :mod:`.write` edits the fleet files to a proposal.
"""
