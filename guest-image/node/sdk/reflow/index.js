'use strict';
// The Reflow JavaScript actor SDK that runs in the Node guest.
const { ActorContext, ActorState } = require('./context');
const { ActorError, checkMetadata } = require('./actor');
const { ActorFailure, invoke, loadScript } = require('./invoke');

module.exports = { ActorContext, ActorState, ActorError, ActorFailure, checkMetadata, invoke, loadScript };
