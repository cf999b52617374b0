"""secureml's own attack surface: what its files must not do to the process that reads them.

`loading`: the one way secureml loads a Keras model file (no code runs from it).
`keyfiles`: secret key files, readable by their owner only and never overwritten.
`files`: reading a file with a size limit that bounds what is read.
"""
