//! Sub-workflows take the importing workflow's `connectors:` settings for every connector they
//! do not configure themselves, down through their own sub-workflows.

use engine_connector::fake::FakeConnector;
use engine_connector::Registry;
use engine_spec::plan::Uses;
use engine_spec::Loader;
use serde_json::json;

#[test]
fn a_sub_workflow_inherits_the_connectors_it_does_not_configure() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "main.yaml",
        "version: 1\nconnectors:\n  fake: { region: parent }\nsteps:\n  sub: { uses: ./sub.yaml }\n  own: { uses: ./own.yaml }\n",
    );
    write("sub.yaml", "version: 1\nsteps:\n  leaf: { uses: ./leaf.yaml }\n  act: { uses: fake.run }\n");
    write("leaf.yaml", "version: 1\nsteps:\n  act: { uses: fake.run }\n");
    write("own.yaml", "version: 1\nconnectors:\n  fake: { region: own }\nsteps:\n  leaf: { uses: ./leaf.yaml }\n");
    let fake = FakeConnector::default();
    let mut registry = Registry::new();
    registry.register(&fake);
    let mut loader = Loader::new(&registry);
    let wf = loader.load(&dir.path().join("main.yaml")).unwrap_or_else(|| panic!("{:?}", loader.diags));
    let Uses::Workflow(sub) = &wf.steps[0].uses else { panic!("not a sub-workflow") };
    assert_eq!(sub.connectors["fake"], json!({"region": "parent"}), "inherited");
    let Uses::Workflow(leaf) = &sub.steps[sub.index["leaf"]].uses else { panic!("not a sub-workflow") };
    assert_eq!(leaf.connectors["fake"], json!({"region": "parent"}), "inherited two levels down");
    let Uses::Workflow(own) = &wf.steps[wf.index["own"]].uses else { panic!("not a sub-workflow") };
    assert_eq!(own.connectors["fake"], json!({"region": "own"}), "its own block wins");
    let Uses::Workflow(leaf) = &own.steps[0].uses else { panic!("not a sub-workflow") };
    assert_eq!(leaf.connectors["fake"], json!({"region": "own"}), "the nearest importer's settings");
    // Loaded on its own, the sub-workflow has only its own block.
    let alone = Loader::new(&registry).load(&dir.path().join("sub.yaml")).unwrap();
    assert!(!alone.connectors.contains_key("fake"));
}
