"""The lottery ticket (no Keras imported here): :class:`~tf_lth.ticket.ticket.LotteryTicket` (θ0, masks per
round, ``next_round``, the trained round kept), its folder (:mod:`~tf_lth.ticket.store`) and the Keras
flavours it works with (:mod:`~tf_lth.ticket.flavours`: one record each, the only dispatch on flavour)."""
