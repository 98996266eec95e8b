"""Many training jobs on one cluster: job traces, each job's speed on each allocation (from the
planner and simulator, or a measured table), a SimPy simulation of the cluster, and scheduling
policies (static, dynamic, hybrid). The values every part shares are in simplan.schedule.core."""
