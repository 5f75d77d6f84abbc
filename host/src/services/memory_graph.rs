//! `elex:host/memory-graph`. The persistent graph arrives with its own store;
//! until then every call answers `unavailable`, so a guest can tell and fall
//! back.

use crate::bindings::elex::host::memory_graph::{
    Connection, ContextId, Engram, EngramData, EngramId, GraphError, Host, SearchHit, SearchQuery,
};
use crate::instance::InstanceState;

fn unavailable<T>() -> Result<T, GraphError> {
    Err(GraphError::Unavailable(String::from("this host has no memory graph configured")))
}

impl Host for InstanceState {
    fn create(&mut self, _data: EngramData, _context: Option<ContextId>) -> Result<EngramId, GraphError> {
        unavailable()
    }
    fn get(&mut self, _id: EngramId) -> Result<Engram, GraphError> {
        unavailable()
    }
    fn update(&mut self, _id: EngramId, _data: EngramData) -> Result<(), GraphError> {
        unavailable()
    }
    fn delete(&mut self, _id: EngramId) -> Result<(), GraphError> {
        unavailable()
    }
    fn connect(&mut self, _edge: Connection) -> Result<(), GraphError> {
        unavailable()
    }
    fn disconnect(
        &mut self,
        _source: EngramId,
        _target: EngramId,
        _relation: String,
    ) -> Result<bool, GraphError> {
        unavailable()
    }
    fn connections(&mut self, _id: EngramId) -> Result<Vec<Connection>, GraphError> {
        unavailable()
    }
    fn search(&mut self, _query: SearchQuery) -> Result<Vec<SearchHit>, GraphError> {
        unavailable()
    }
    fn path(
        &mut self,
        _source: EngramId,
        _target: EngramId,
        _max_depth: u32,
    ) -> Result<Option<Vec<EngramId>>, GraphError> {
        unavailable()
    }
    fn neighbourhood(
        &mut self,
        _id: EngramId,
        _depth: u32,
        _relation: Option<String>,
        _limit: u32,
    ) -> Result<Vec<EngramId>, GraphError> {
        unavailable()
    }
    fn create_context(&mut self, _name: String) -> Result<ContextId, GraphError> {
        unavailable()
    }
    fn add_to_context(&mut self, _context: ContextId, _id: EngramId) -> Result<(), GraphError> {
        unavailable()
    }
    fn add_member(&mut self, _context: ContextId, _agent_id: String) -> Result<(), GraphError> {
        unavailable()
    }
    fn context_engrams(&mut self, _context: ContextId, _limit: u32) -> Result<Vec<EngramId>, GraphError> {
        unavailable()
    }
    fn begin(&mut self) -> Result<(), GraphError> {
        unavailable()
    }
    fn commit(&mut self) -> Result<(), GraphError> {
        unavailable()
    }
    fn rollback(&mut self) -> Result<(), GraphError> {
        unavailable()
    }
}
