"""Provider webhooks: each module checks that a request really comes from its provider and turns
its payload into ``InboundEvent``s. Pure functions over bytes and headers; the HTTP routes that
call them map ``WebhookRejected`` to 401, ``WebhookMalformed`` to 400 and ``WebhookUnavailable``
to 503."""
