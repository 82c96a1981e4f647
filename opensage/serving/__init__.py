"""Hosting: the model server (``model_server``), its handlers (``handlers``) and codecs (``codecs``)."""
