"""Running a trained run over many videos, on one machine or a Ray cluster.

:mod:`~dgp_pyro.scale.manifest` records which run and checkpoint made each video's output, so a
repeated call skips what is complete; :mod:`~dgp_pyro.scale.predict_many` is ``dgp-pyro predict``
over a list of videos with either engine (``serial`` in this process, ``ray`` one task per video
or session, :mod:`~dgp_pyro.scale.ray_engine`).
"""
