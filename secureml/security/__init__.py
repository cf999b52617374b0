"""What secureml's own files must not do to the process that reads them.

`loading`: the one way secureml loads a Keras model file (no code runs from it).
"""
