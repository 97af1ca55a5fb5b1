BEGIN TRANSACTION;
CREATE TABLE host_agent_status (
	host_id BIGINT NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	updated VARCHAR(40) NOT NULL, 
	PRIMARY KEY (host_id)
);
INSERT INTO "host_agent_status" VALUES(1,'AVAILABLE','2026-12-05T11:17:48.202+00:00');
INSERT INTO "host_agent_status" VALUES(2,'AVAILABLE','2026-12-05T11:17:48.202+00:00');
INSERT INTO "host_agent_status" VALUES(3,'OFFLINE','2026-12-05T11:17:48.207+00:00');
CREATE TABLE host_locks (
	host_id BIGINT NOT NULL, 
	task_id BIGINT NOT NULL, 
	acquired VARCHAR(40) NOT NULL, 
	PRIMARY KEY (host_id)
);
INSERT INTO "host_locks" VALUES(4,3,'2026-12-05T11:17:48.209+00:00');
INSERT INTO "host_locks" VALUES(5,3,'2026-12-05T11:17:48.209+00:00');
CREATE TABLE host_snapshots (
	task_id BIGINT NOT NULL, 
	host_id BIGINT NOT NULL, 
	phase VARCHAR(10) NOT NULL, 
	pids TEXT NOT NULL, 
	PRIMARY KEY (task_id, host_id, phase)
);
INSERT INTO "host_snapshots" VALUES(1,1,'before','{"ocp_agentd": 101, "ocp_mgragent": 201}');
INSERT INTO "host_snapshots" VALUES(1,1,'after','{"ocp_agentd": 301, "ocp_mgragent": 401}');
INSERT INTO "host_snapshots" VALUES(1,2,'before','{"ocp_agentd": 102, "ocp_mgragent": 202}');
INSERT INTO "host_snapshots" VALUES(1,2,'after','{"ocp_agentd": 302, "ocp_mgragent": 402}');
INSERT INTO "host_snapshots" VALUES(2,3,'before','{"ocp_agentd": 31}');
INSERT INTO "host_snapshots" VALUES(2,3,'starts','{"ocp_agentd": 1764460800}');
INSERT INTO "host_snapshots" VALUES(3,4,'before','{"ocp_agentd": 41}');
CREATE TABLE subtask_logs (
	id INTEGER NOT NULL, 
	subtask_id BIGINT NOT NULL, 
	text TEXT NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "subtask_logs" VALUES(1,1,'############{EXECUTE}{0}####');
INSERT INTO "subtask_logs" VALUES(2,1,'Prepare restart OCP agent: done');
INSERT INTO "subtask_logs" VALUES(3,1,'Prepare restart OCP agent ok');
INSERT INTO "subtask_logs" VALUES(4,2,'############{EXECUTE}{1}####');
INSERT INTO "subtask_logs" VALUES(5,2,'Prepare restart OCP agent: done');
INSERT INTO "subtask_logs" VALUES(6,2,'Prepare restart OCP agent ok');
INSERT INTO "subtask_logs" VALUES(7,3,'############{EXECUTE}{2}####');
INSERT INTO "subtask_logs" VALUES(8,3,'Wait node: done');
INSERT INTO "subtask_logs" VALUES(9,3,'Wait node ok');
INSERT INTO "subtask_logs" VALUES(10,4,'############{EXECUTE}{3}####');
INSERT INTO "subtask_logs" VALUES(11,4,'Restart pos proxy: done');
INSERT INTO "subtask_logs" VALUES(12,4,'Restart pos proxy ok');
INSERT INTO "subtask_logs" VALUES(13,5,'############{EXECUTE}{4}####');
INSERT INTO "subtask_logs" VALUES(14,5,'Restart pos proxy: done');
INSERT INTO "subtask_logs" VALUES(15,5,'Restart pos proxy ok');
INSERT INTO "subtask_logs" VALUES(16,6,'############{EXECUTE}{5}####');
INSERT INTO "subtask_logs" VALUES(17,6,'Wait node: done');
INSERT INTO "subtask_logs" VALUES(18,6,'Wait node ok');
INSERT INTO "subtask_logs" VALUES(19,7,'############{EXECUTE}{6}####');
INSERT INTO "subtask_logs" VALUES(20,7,'Stop all OCP agent processes: done');
INSERT INTO "subtask_logs" VALUES(21,7,'Stop all OCP agent processes ok');
INSERT INTO "subtask_logs" VALUES(22,8,'############{EXECUTE}{7}####');
INSERT INTO "subtask_logs" VALUES(23,8,'Stop all OCP agent processes: done');
INSERT INTO "subtask_logs" VALUES(24,8,'Stop all OCP agent processes ok');
INSERT INTO "subtask_logs" VALUES(25,9,'############{EXECUTE}{8}####');
INSERT INTO "subtask_logs" VALUES(26,9,'Wait node: done');
INSERT INTO "subtask_logs" VALUES(27,9,'Wait node ok');
INSERT INTO "subtask_logs" VALUES(28,10,'############{EXECUTE}{9}####');
INSERT INTO "subtask_logs" VALUES(29,10,'Start all OCP agent processes: done');
INSERT INTO "subtask_logs" VALUES(30,10,'Start all OCP agent processes ok');
INSERT INTO "subtask_logs" VALUES(31,11,'############{EXECUTE}{10}####');
INSERT INTO "subtask_logs" VALUES(32,11,'Start all OCP agent processes: done');
INSERT INTO "subtask_logs" VALUES(33,11,'Start all OCP agent processes ok');
INSERT INTO "subtask_logs" VALUES(34,12,'############{EXECUTE}{11}####');
INSERT INTO "subtask_logs" VALUES(35,12,'Wait node: done');
INSERT INTO "subtask_logs" VALUES(36,12,'Wait node ok');
INSERT INTO "subtask_logs" VALUES(37,13,'############{EXECUTE}{12}####');
INSERT INTO "subtask_logs" VALUES(38,13,'Finish OCP agent operation: done');
INSERT INTO "subtask_logs" VALUES(39,13,'Finish OCP agent operation ok');
INSERT INTO "subtask_logs" VALUES(40,14,'############{EXECUTE}{13}####');
INSERT INTO "subtask_logs" VALUES(41,14,'Finish OCP agent operation: done');
INSERT INTO "subtask_logs" VALUES(42,14,'Finish OCP agent operation ok');
INSERT INTO "subtask_logs" VALUES(43,15,'############{EXECUTE}{0}####');
INSERT INTO "subtask_logs" VALUES(44,15,'Prepare restart OCP agent: done');
INSERT INTO "subtask_logs" VALUES(45,15,'Prepare restart OCP agent ok');
INSERT INTO "subtask_logs" VALUES(46,16,'####{EXECUTE}####');
INSERT INTO "subtask_logs" VALUES(47,16,'ssh: connect to host 3: Connection refused');
INSERT INTO "subtask_logs" VALUES(48,16,'exit 255');
INSERT INTO "subtask_logs" VALUES(49,24,'############{EXECUTE}{0}####');
INSERT INTO "subtask_logs" VALUES(50,24,'Prepare restart OCP agent: done');
INSERT INTO "subtask_logs" VALUES(51,24,'Prepare restart OCP agent ok');
INSERT INTO "subtask_logs" VALUES(52,25,'############{EXECUTE}{1}####');
INSERT INTO "subtask_logs" VALUES(53,25,'Prepare restart OCP agent: done');
INSERT INTO "subtask_logs" VALUES(54,25,'Prepare restart OCP agent ok');
INSERT INTO "subtask_logs" VALUES(55,26,'############{EXECUTE}{2}####');
INSERT INTO "subtask_logs" VALUES(56,26,'Wait node: done');
INSERT INTO "subtask_logs" VALUES(57,26,'Wait node ok');
INSERT INTO "subtask_logs" VALUES(58,27,'####{EXECUTE}####');
INSERT INTO "subtask_logs" VALUES(59,28,'####{EXECUTE}####');
CREATE TABLE subtasks (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	task_id BIGINT NOT NULL, 
	seq INTEGER NOT NULL, 
	kind VARCHAR(40) NOT NULL, 
	host_id BIGINT, 
	name VARCHAR(200) NOT NULL, 
	class_name VARCHAR(300) NOT NULL, 
	operation VARCHAR(20) NOT NULL, 
	parallel_idx INTEGER NOT NULL, 
	prohibit_rollback BOOLEAN NOT NULL, 
	run_time INTEGER NOT NULL, 
	series_id INTEGER NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	timeout INTEGER NOT NULL, 
	upstreams TEXT NOT NULL, 
	downstreams TEXT NOT NULL, 
	start_time VARCHAR(40), 
	finish_time VARCHAR(40), 
	FOREIGN KEY(task_id) REFERENCES tasks (id)
);
INSERT INTO "subtasks" VALUES(1,1,0,'prepare',1,'Prepare restart OCP agent','com.alipay.ocp.service.task.business.obagent.PrepareRestartOcpAgentTask','EXECUTE',0,0,1,2,'SUCCESSFUL',60,'[]','[3]','2026-11-30T10:00:00.000+08:00','2026-11-30T10:00:01.000+08:00');
INSERT INTO "subtasks" VALUES(2,1,1,'prepare',2,'Prepare restart OCP agent','com.alipay.ocp.service.task.business.obagent.PrepareRestartOcpAgentTask','EXECUTE',1,0,1,2,'SUCCESSFUL',60,'[]','[3]','2026-11-30T10:00:01.000+08:00','2026-11-30T10:00:02.000+08:00');
INSERT INTO "subtasks" VALUES(3,1,2,'wait',NULL,'Wait node','com.alipay.ocp.service.task.business.WaitNode','EXECUTE',-1,0,1,0,'SUCCESSFUL',30,'[1, 2]','[4, 5]','2026-11-30T10:00:02.000+08:00','2026-11-30T10:00:03.000+08:00');
INSERT INTO "subtasks" VALUES(4,1,3,'restart_pos_proxy',1,'Restart pos proxy','com.alipay.ocp.service.task.business.obagent.RestartPosProxyTask','EXECUTE',0,0,1,8,'SUCCESSFUL',60,'[3]','[6]','2026-11-30T10:00:03.000+08:00','2026-11-30T10:00:04.000+08:00');
INSERT INTO "subtasks" VALUES(5,1,4,'restart_pos_proxy',2,'Restart pos proxy','com.alipay.ocp.service.task.business.obagent.RestartPosProxyTask','EXECUTE',1,0,1,8,'SUCCESSFUL',60,'[3]','[6]','2026-11-30T10:00:04.000+08:00','2026-11-30T10:00:05.000+08:00');
INSERT INTO "subtasks" VALUES(6,1,5,'wait',NULL,'Wait node','com.alipay.ocp.service.task.business.WaitNode','EXECUTE',-1,0,1,4,'SUCCESSFUL',30,'[4, 5]','[7, 8]','2026-11-30T10:00:05.000+08:00','2026-11-30T10:00:06.000+08:00');
INSERT INTO "subtasks" VALUES(7,1,6,'stop_all',1,'Stop all OCP agent processes','com.alipay.ocp.service.task.business.obagent.StopAllOcpAgentProcessesTask','EXECUTE',0,0,1,1,'SUCCESSFUL',600,'[6]','[9]','2026-11-30T10:00:06.000+08:00','2026-11-30T10:00:07.000+08:00');
INSERT INTO "subtasks" VALUES(8,1,7,'stop_all',2,'Stop all OCP agent processes','com.alipay.ocp.service.task.business.obagent.StopAllOcpAgentProcessesTask','EXECUTE',1,0,1,1,'SUCCESSFUL',600,'[6]','[9]','2026-11-30T10:00:07.000+08:00','2026-11-30T10:00:08.000+08:00');
INSERT INTO "subtasks" VALUES(9,1,8,'wait',NULL,'Wait node','com.alipay.ocp.service.task.business.WaitNode','EXECUTE',-1,0,1,7,'SUCCESSFUL',30,'[7, 8]','[10, 11]','2026-11-30T10:00:08.000+08:00','2026-11-30T10:00:09.000+08:00');
INSERT INTO "subtasks" VALUES(10,1,9,'start_all',1,'Start all OCP agent processes','com.alipay.ocp.service.task.business.obagent.StartAllOcpAgentProcessesTask','EXECUTE',0,0,1,5,'SUCCESSFUL',600,'[9]','[12]','2026-11-30T10:00:09.000+08:00','2026-11-30T10:00:10.000+08:00');
INSERT INTO "subtasks" VALUES(11,1,10,'start_all',2,'Start all OCP agent processes','com.alipay.ocp.service.task.business.obagent.StartAllOcpAgentProcessesTask','EXECUTE',1,0,1,5,'SUCCESSFUL',600,'[9]','[12]','2026-11-30T10:00:10.000+08:00','2026-11-30T10:00:11.000+08:00');
INSERT INTO "subtasks" VALUES(12,1,11,'wait',NULL,'Wait node','com.alipay.ocp.service.task.business.WaitNode','EXECUTE',-1,0,1,3,'SUCCESSFUL',30,'[10, 11]','[13, 14]','2026-11-30T10:00:11.000+08:00','2026-11-30T10:00:12.000+08:00');
INSERT INTO "subtasks" VALUES(13,1,12,'finish',1,'Finish OCP agent operation','com.alipay.ocp.service.task.business.obagent.FinishOcpAgentOperationTask','EXECUTE',0,0,1,6,'SUCCESSFUL',60,'[12]','[]','2026-11-30T10:00:12.000+08:00','2026-11-30T10:00:13.000+08:00');
INSERT INTO "subtasks" VALUES(14,1,13,'finish',2,'Finish OCP agent operation','com.alipay.ocp.service.task.business.obagent.FinishOcpAgentOperationTask','EXECUTE',1,0,1,6,'SUCCESSFUL',60,'[12]','[]','2026-11-30T10:00:13.000+08:00','2026-11-30T10:00:14.000+08:00');
INSERT INTO "subtasks" VALUES(15,2,0,'prepare',3,'Prepare restart OCP agent','com.alipay.ocp.service.task.business.obagent.PrepareRestartOcpAgentTask','EXECUTE',0,0,1,2,'SUCCESSFUL',60,'[]','[16]','2026-11-30T10:00:00.000+08:00','2026-11-30T10:00:01.000+08:00');
INSERT INTO "subtasks" VALUES(16,2,1,'wait',NULL,'Wait node','com.alipay.ocp.service.task.business.WaitNode','EXECUTE',-1,0,1,0,'FAILED',30,'[15]','[17]','2026-11-30T10:00:20.000+08:00','2026-11-30T10:00:21.000+08:00');
INSERT INTO "subtasks" VALUES(17,2,2,'restart_pos_proxy',3,'Restart pos proxy','com.alipay.ocp.service.task.business.obagent.RestartPosProxyTask','EXECUTE',0,0,1,8,'PENDING',60,'[16]','[18]',NULL,NULL);
INSERT INTO "subtasks" VALUES(18,2,3,'wait',NULL,'Wait node','com.alipay.ocp.service.task.business.WaitNode','EXECUTE',-1,0,1,4,'PENDING',30,'[17]','[19]',NULL,NULL);
INSERT INTO "subtasks" VALUES(19,2,4,'stop_all',3,'Stop all OCP agent processes','com.alipay.ocp.service.task.business.obagent.StopAllOcpAgentProcessesTask','EXECUTE',0,0,1,1,'PENDING',600,'[18]','[20]',NULL,NULL);
INSERT INTO "subtasks" VALUES(20,2,5,'wait',NULL,'Wait node','com.alipay.ocp.service.task.business.WaitNode','EXECUTE',-1,0,1,7,'PENDING',30,'[19]','[21]',NULL,NULL);
INSERT INTO "subtasks" VALUES(21,2,6,'start_all',3,'Start all OCP agent processes','com.alipay.ocp.service.task.business.obagent.StartAllOcpAgentProcessesTask','EXECUTE',0,0,1,5,'PENDING',600,'[20]','[22]',NULL,NULL);
INSERT INTO "subtasks" VALUES(22,2,7,'wait',NULL,'Wait node','com.alipay.ocp.service.task.business.WaitNode','EXECUTE',-1,0,1,3,'PENDING',30,'[21]','[23]',NULL,NULL);
INSERT INTO "subtasks" VALUES(23,2,8,'finish',3,'Finish OCP agent operation','com.alipay.ocp.service.task.business.obagent.FinishOcpAgentOperationTask','EXECUTE',0,0,1,6,'PENDING',60,'[22]','[]',NULL,NULL);
INSERT INTO "subtasks" VALUES(24,3,0,'prepare',4,'Prepare restart OCP agent','com.alipay.ocp.service.task.business.obagent.PrepareRestartOcpAgentTask','EXECUTE',0,0,1,2,'SUCCESSFUL',60,'[]','[26]','2026-11-30T10:00:00.000+08:00','2026-11-30T10:00:01.000+08:00');
INSERT INTO "subtasks" VALUES(25,3,1,'prepare',5,'Prepare restart OCP agent','com.alipay.ocp.service.task.business.obagent.PrepareRestartOcpAgentTask','EXECUTE',1,0,1,2,'SUCCESSFUL',60,'[]','[26]','2026-11-30T10:00:01.000+08:00','2026-11-30T10:00:02.000+08:00');
INSERT INTO "subtasks" VALUES(26,3,2,'wait',NULL,'Wait node','com.alipay.ocp.service.task.business.WaitNode','EXECUTE',-1,0,1,0,'SUCCESSFUL',30,'[24, 25]','[27, 28]','2026-11-30T10:00:02.000+08:00','2026-11-30T10:00:03.000+08:00');
INSERT INTO "subtasks" VALUES(27,3,3,'restart_pos_proxy',4,'Restart pos proxy','com.alipay.ocp.service.task.business.obagent.RestartPosProxyTask','EXECUTE',0,0,1,8,'RUNNING',60,'[26]','[29]','2026-11-30T10:00:30.000+08:00',NULL);
INSERT INTO "subtasks" VALUES(28,3,4,'restart_pos_proxy',5,'Restart pos proxy','com.alipay.ocp.service.task.business.obagent.RestartPosProxyTask','CANCEL',1,0,1,8,'CANCELING',60,'[26]','[29]','2026-11-30T10:00:31.000+08:00',NULL);
INSERT INTO "subtasks" VALUES(29,3,5,'wait',NULL,'Wait node','com.alipay.ocp.service.task.business.WaitNode','EXECUTE',-1,0,1,4,'PENDING',30,'[27, 28]','[30, 31]',NULL,NULL);
INSERT INTO "subtasks" VALUES(30,3,6,'stop_all',4,'Stop all OCP agent processes','com.alipay.ocp.service.task.business.obagent.StopAllOcpAgentProcessesTask','EXECUTE',0,0,1,1,'PENDING',600,'[29]','[32]',NULL,NULL);
INSERT INTO "subtasks" VALUES(31,3,7,'stop_all',5,'Stop all OCP agent processes','com.alipay.ocp.service.task.business.obagent.StopAllOcpAgentProcessesTask','EXECUTE',1,0,1,1,'PENDING',600,'[29]','[32]',NULL,NULL);
INSERT INTO "subtasks" VALUES(32,3,8,'wait',NULL,'Wait node','com.alipay.ocp.service.task.business.WaitNode','EXECUTE',-1,0,1,7,'PENDING',30,'[30, 31]','[33, 34]',NULL,NULL);
INSERT INTO "subtasks" VALUES(33,3,9,'start_all',4,'Start all OCP agent processes','com.alipay.ocp.service.task.business.obagent.StartAllOcpAgentProcessesTask','EXECUTE',0,0,1,5,'PENDING',600,'[32]','[35]',NULL,NULL);
INSERT INTO "subtasks" VALUES(34,3,10,'start_all',5,'Start all OCP agent processes','com.alipay.ocp.service.task.business.obagent.StartAllOcpAgentProcessesTask','EXECUTE',1,0,1,5,'PENDING',600,'[32]','[35]',NULL,NULL);
INSERT INTO "subtasks" VALUES(35,3,11,'wait',NULL,'Wait node','com.alipay.ocp.service.task.business.WaitNode','EXECUTE',-1,0,1,3,'PENDING',30,'[33, 34]','[36, 37]',NULL,NULL);
INSERT INTO "subtasks" VALUES(36,3,12,'finish',4,'Finish OCP agent operation','com.alipay.ocp.service.task.business.obagent.FinishOcpAgentOperationTask','EXECUTE',0,0,1,6,'PENDING',60,'[35]','[]',NULL,NULL);
INSERT INTO "subtasks" VALUES(37,3,13,'finish',5,'Finish OCP agent operation','com.alipay.ocp.service.task.business.obagent.FinishOcpAgentOperationTask','EXECUTE',1,0,1,6,'PENDING',60,'[35]','[]',NULL,NULL);
CREATE TABLE tasks (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	name VARCHAR(200) NOT NULL, 
	type VARCHAR(20) NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	operation VARCHAR(20) NOT NULL, 
	creator VARCHAR(200) NOT NULL, 
	executor VARCHAR(200) NOT NULL, 
	host_ids TEXT NOT NULL, 
	prohibit_rollback BOOLEAN NOT NULL, 
	options TEXT NOT NULL, 
	inventory TEXT NOT NULL, 
	create_time VARCHAR(40) NOT NULL, 
	start_time VARCHAR(40) NOT NULL, 
	finish_time VARCHAR(40), 
	lease_until FLOAT NOT NULL, 
	runner VARCHAR(200) NOT NULL
);
INSERT INTO "tasks" VALUES(1,'Batch restart OCP agent','MANUAL','SUCCESSFUL','EXECUTE','admin','10.0.0.1','[1, 2]',0,'{"max_workers": 8}','/etc/ocp-restart/inventory.toml','2026-12-05T11:17:48.174+00:00','2026-12-05T11:17:48.174+00:00','2026-11-30T10:00:50.000+08:00',0.0,'');
INSERT INTO "tasks" VALUES(2,'Batch restart OCP agent','MANUAL','FAILED','EXECUTE','ops','10.0.0.2','[3]',0,'{}','','2026-12-05T11:17:48.204+00:00','2026-12-05T11:17:48.204+00:00','2026-11-30T10:00:22.000+08:00',0.0,'');
INSERT INTO "tasks" VALUES(3,'Batch restart OCP agent','MANUAL','RUNNING','EXECUTE','admin','10.0.0.1','[4, 5]',0,'{}','','2026-12-05T11:17:48.209+00:00','2026-12-05T11:17:48.209+00:00',NULL,2.11182946821100139627e+09,'pid 4242 on fixture-host [0a1b2c3d]');
CREATE INDEX ix_subtask_logs_subtask_id ON subtask_logs (subtask_id);
CREATE INDEX ix_subtasks_host_id ON subtasks (host_id);
CREATE INDEX ix_subtasks_task_id ON subtasks (task_id);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('tasks',4);
INSERT INTO "sqlite_sequence" VALUES('subtasks',46);
COMMIT;
