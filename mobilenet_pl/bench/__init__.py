"""The benchmark's sections (network, Lightning loop, input pipeline, export, app end to end, compile modes),
its settings and its report. Imports deploy/, app/, lit/ and models/."""
