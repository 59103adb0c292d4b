"""The live dashboard: a read-only web page of a run (``fedseg dashboard RUN``).

``state`` builds the run's JSON snapshot from the tracking layer, ``app`` is the FastAPI
app (routes, server-sent events, token), ``serve`` the loopback rule and uvicorn, ``child``
the dashboard as a child process of ``simulate``/``server start --dashboard``, ``static/``
the page (plotly.js comes from the installed ``plotly`` wheel). Above ``tracking``, below
``cli``; importing this package imports no web framework.
"""
